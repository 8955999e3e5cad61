"""STAND-IN, not the Blaxel SDK: the shape of blaxel.core.authentication.BlaxelAuth that
blauth.blaxel_auth builds on (see ../../../README.md)."""

try:
    from httpx import Auth as _Base
except ImportError:  # the protocol without httpx: a generator that yields the request once
    _Base = object

STANDIN = True


class BlaxelAuth(_Base):
    """The SDK's base class: constructed with (credentials, workspace_name, base_url); the SDK
    calls get_headers(), reads token and workspace_name, and hands the object to httpx as auth."""

    def __init__(self, credentials, workspace_name, base_url):
        self.credentials = credentials
        self.workspace_name = workspace_name
        self.base_url = base_url

    def get_headers(self):
        return {}

    @property
    def token(self):
        raise NotImplementedError("Subclasses must implement the token property")
