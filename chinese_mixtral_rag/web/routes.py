"""The app's own routes beside Gradio's: the originals behind citations and their page
previews (:mod:`.originals`), behind the same login as the page."""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.web.app import WebApp
from chinese_mixtral_rag.web.originals import original_bytes, page_preview, served_as


def add_original_routes(server: Any, web: WebApp) -> None:
    """``/cmrag/original/<kb id>/<chunk id>/<name>`` (the file) and ``/cmrag/preview/<kb
    id>/<page>/<chunk ids>.png`` (its page, the passage marked), behind the app's login."""

    def logged_in(request: Request) -> None:
        # Gradio keeps its logins in ``App.tokens`` by a cookie named after ``cookie_id``; it
        # has no public hook to put routes added beside it behind that login.
        if server.auth is None:
            return
        cookies = request.cookies
        token = cookies.get(f"access-token-{server.cookie_id}") or cookies.get(
            f"access-token-unsecure-{server.cookie_id}"
        )
        if server.tokens.get(token) is None:
            raise HTTPException(401, "Log in to the app first.")

    def found(kb: str, chunks: list[str]) -> Any:
        try:
            return web.original(kb, chunks)
        except ChineseMixtralError as exc:
            raise HTTPException(404, str(exc)) from exc

    router = APIRouter(prefix="/cmrag", dependencies=[Depends(logged_in)])

    @router.get("/original/{kb}/{chunk}/{name}")
    def original(kb: str, chunk: str, name: str, anyway: bool = False) -> Response:
        file = found(kb, [chunk])
        if file.changed and not anyway:
            warning = html.escape(web.text["changed_file"].format(name=file.source))
            link = html.escape(f"?anyway=1#{urllib.parse.quote(name)}")
            return HTMLResponse(
                f"<meta charset='utf-8'><p>{warning} <a href='{link}'>"
                f"{html.escape(web.text['open_anyway'])}</a></p>",
                status_code=409,
            )
        media, inline = served_as(file.path)
        disposition = "inline" if inline else "attachment"
        headers = {"X-Content-Type-Options": "nosniff"}
        body = original_bytes(file)
        if body is not None:
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{urllib.parse.quote(name)}"
            return Response(body, media_type=media, headers=headers)
        return FileResponse(
            file.path,
            media_type=media,
            filename=file.path.name,
            content_disposition_type=disposition,
            headers=headers,
        )

    @router.get("/preview/{kb}/{page}/{chunks}.png")
    def preview(kb: str, page: int, chunks: str) -> Response:
        file = found(kb, chunks.split(","))
        try:
            picture = page_preview(file, page)
        except ChineseMixtralError as exc:
            raise HTTPException(404, str(exc)) from exc
        return Response(picture, media_type="image/png", headers={"Cache-Control": "private"})

    server.include_router(router)
