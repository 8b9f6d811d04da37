"""The fields of a posted form, read once per request.

A web UI turn posts a small urlencoded form. FastAPI's `Form()` fields parse it with
python-multipart and validate each field through its dependency machinery; on the
routes every turn takes, that was a visible share of the loop under load (issue 19).
The edge has already read the whole body and refused it if too large or not UTF-8
(security.InputGuard), so here it is only split: once, shared by the CSRF check and the
route. Other encodings (multipart uploads) go through Starlette's parser as before.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError

FORM_TYPE = "application/x-www-form-urlencoded"  # (security.py guards bodies of this type)
MAX_FIELDS = 1000  # (Starlette's limit for a form)


async def form_fields(request: Request) -> dict[str, str]:
    """The form's text fields (the last value of a repeated name, as `Form()` reads it)."""
    fields: dict[str, str] | None = getattr(request.state, "form_fields", None)
    if fields is None:
        body = None
        if request.headers.get("content-type", "").startswith(FORM_TYPE):
            try:
                body = (await request.body()).decode()
            except RuntimeError:  # a route with Form() fields: FastAPI has parsed the form already
                body = None
        if body is not None:
            try:
                fields = dict(parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS))
            except ValueError:  # more fields than any of our forms has
                raise RequestValidationError([{"type": "too_many_fields", "loc": ("body",), "input": None,
                                               "msg": f"More than {MAX_FIELDS} fields"}]) from None
        else:
            form = await request.form()  # (parsed once: Starlette keeps it)
            fields = {name: value for name, value in form.items() if isinstance(value, str)}
        request.state.form_fields = fields
    return fields


def text_field(fields: dict[str, str], name: str, max_length: int | None = None) -> str:
    """A field's text ("" when absent); longer than `max_length` is the 422 a `Form(max_length=...)` gives."""
    value = fields.get(name, "")
    if max_length is not None and len(value) > max_length:
        raise RequestValidationError([{
            "type": "string_too_long", "loc": ("body", name), "input": value, "ctx": {"max_length": max_length},
            "msg": f"String should have at most {max_length} characters",
        }])
    return value
