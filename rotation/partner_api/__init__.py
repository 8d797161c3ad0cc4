"""The partner API: the endpoints Vercel calls on us (not the webhook).

Modules: `views` (thin views answering in Vercel's error shape), `oidc` (checking Vercel's
OIDC token against its JWKS), `body` (the request bodies, strictly checked). The rules live
in `rotation.services.vercel_request`.
"""
