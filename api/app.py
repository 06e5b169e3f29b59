"""The Flask app factory: one Gateway per app, blueprints for models, jobs and health, problem handlers."""

from __future__ import annotations

import logging

from flask import Flask

from batcomputer.logs import configure_logging
from batcomputer.models.registry import Registry
from batcomputer.settings import Settings


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> Flask:
    """Build the gateway; settings default to the BATCOMPUTER_* environment (read now, not at import)."""
    from api.auth import install as install_auth
    from api.cors import install as install_cors
    from api.docs import docs
    from api.gateway import Gateway
    from api.metrics import install as install_metrics
    from api.metrics import metrics
    from api.problems import register_problem_handlers
    from api.routes.batches import batches
    from api.routes.health import health
    from api.routes.jobs import jobs
    from api.routes.models import models
    from api.routes.monitoring import monitoring
    from api.routes.retraining import retraining
    from api.routes.rollout import rollout
    from api.routes.seed import seed
    from api.routes.streams import streams
    from api.routes.v2 import v2
    from api.web import web

    settings = settings or Settings.from_env()
    app = Flask("batcomputer")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1  # one byte past: see api.context.read_body
    app.json.sort_keys = False  # type: ignore[attr-defined]
    gateway = app.extensions["gateway"] = Gateway(settings, registry)
    register_problem_handlers(app)
    install_metrics(app, gateway)
    install_cors(app, settings)
    install_auth(app, settings, gateway.redis)
    for blueprint in (health, metrics, models, rollout, jobs, batches, retraining, monitoring, streams, seed, v2, docs,
                      web):
        app.register_blueprint(blueprint)
    if not logging.getLogger("batcomputer").handlers:  # gunicorn configures its own loggers only
        configure_logging(settings, logging.INFO, "batcomputer")
    return app
