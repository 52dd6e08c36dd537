"""The native JSON REST API (`/v1`), its OpenAPI document and its offline docs page.

`create_app(platform, admin_key=...)` builds the Starlette application; `paycell serve` runs it
under uvicorn. Modules: `app` (routes and handlers), `errors` (the one table from outcome to
HTTP status), `auth` (API keys and roles), `idempotency` (Stripe's Idempotency-Key),
`validation` (request bodies and query parameters), `render` (records as JSON), `openapi`
(the hand-written OpenAPI 3.1 document) and `docs` (the offline interactive docs page).
"""

from paycell.adapters.http.app import create_app

__all__ = ["create_app"]
