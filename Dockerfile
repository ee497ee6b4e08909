# One image for every xp process: the collector, the workers and the one-shot
# `xp migrate`; docker-compose.yml and deploy/k8s/ pick the role by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XP_DATA_DIR=/var/lib/xp

WORKDIR /app

# Dependencies in a layer of their own, rebuilt only when pyproject.toml changes:
# install the project from empty packages, then drop it and keep what it pulled in.
COPY pyproject.toml README.md ./
RUN mkdir pipeline schemas \
    && touch pipeline/__init__.py schemas/__init__.py \
    && pip install . \
    && pip uninstall --yes xp-pipeline \
    && rm -rf pipeline schemas build ./*.egg-info

# Editable, because `xp migrate` reads deploy/clickhouse/ next to the package.
COPY schemas ./schemas
COPY pipeline ./pipeline
COPY deploy/clickhouse ./deploy/clickhouse
RUN pip install --no-deps --editable . \
    && useradd --system --uid 10001 --home-dir /var/lib/xp --create-home xp

# Faust keeps its local state in the working directory: the one place xp writes.
USER xp
WORKDIR /var/lib/xp
EXPOSE 8080 9108
CMD ["xp", "--help"]
