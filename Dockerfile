# The rmp CLI image used by docker-compose.yml (services `migrate` and `rmp`).
# No Node.js: containers always get DATABASE_URL, so the embedded engine in
# embedded/ is never started here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# postgresql-client: psql \copy, pg_dump and pg_restore for operators (docs/backups.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first so code edits don't reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p rmp rmp_app transform ingest analytics bench \
    && touch rmp/__init__.py rmp_app/__init__.py transform/__init__.py ingest/__init__.py analytics/__init__.py bench/__init__.py \
    && pip install . && pip uninstall -y resource-metrics-platform

COPY . .
# Editable: rmp.settings finds sql/, alembic/ and dbt/ next to the package.
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 rmp \
    && mkdir -p /reports && chown rmp /reports /app/dbt

USER rmp
ENTRYPOINT ["rmp"]
CMD ["--help"]
