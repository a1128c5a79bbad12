# The LESS selection service. One image recipe, two flavours chosen by build args:
#   cpu (default): torch CPU wheel + faiss-cpu        docker compose --profile cpu up
#   gpu:           torch CUDA wheel (PyPI) + faiss-gpu docker compose --profile gpu up
# Datastores, models and the JSON config are mounted at run time, never baked in.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG EXTRA=cpu
# An extra package index for torch (e.g. a CPU-only wheel index, which keeps the image free of
# multi-GB CUDA wheels). Empty: pip's own configuration decides. No index host is written here.
ARG TORCH_INDEX=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# Dependencies first so code edits do not reinstall torch. README.md* tolerates its absence.
COPY pyproject.toml README.md* ./
COPY less_core ./less_core
COPY indexer ./indexer
COPY service ./service
COPY client ./client
# The SDK (./client: less_client + the wire contract less_wire) is its own distribution.
RUN pip install ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} ./client ".[${EXTRA}]"

RUN useradd --create-home --uid 1000 less
USER less

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"
ENTRYPOINT ["less-serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--config", "/config/service.json"]
