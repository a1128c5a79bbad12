"""HTTP routes, one module per resource; ``api_router`` combines the ``/v1`` ones."""

from fastapi import APIRouter

from service.routes import admin, datastores, jobs, select

api_router = APIRouter(prefix="/v1")
api_router.include_router(datastores.router)
api_router.include_router(select.router)
api_router.include_router(jobs.router)
api_router.include_router(admin.router)
api_router.include_router(admin.keys_router)
