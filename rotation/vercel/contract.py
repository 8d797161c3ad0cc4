"""Facts of Vercel's contract shared by the client, the importer and the stand-in."""

import re

ENVIRONMENTS = ("production", "preview", "development")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_valid_env_name(name: object) -> bool:
    """Vercel environment variable names: letters, digits, underscore; no leading digit."""
    return isinstance(name, str) and bool(ENV_NAME_PATTERN.match(name))
