"""An aiohttp app that reports its worker's loop (oxit_common)."""

from aiohttp import web

from oxit_common import info, report


async def _startup(app):
    report()


async def _index(request):
    return web.json_response(info())


def make_app():
    app = web.Application()
    app.on_startup.append(_startup)
    app.router.add_get("/", _index)
    return app


async def make_app_async():  # gunicorn's aiohttp worker accepts a coroutine factory too
    return make_app()
