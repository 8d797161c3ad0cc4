"""Development tools: the Vercel stand-in, demo data and the demo credential provider.

A Django app of its own, installed only when DEBUG is on (and so under the tests): with
DEBUG=False nothing here is imported and its commands do not exist.
"""
