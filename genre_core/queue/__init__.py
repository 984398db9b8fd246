"""The fleet's work queue: :class:`~genre_core.queue.jobs.CeleryJobs` hands clips to
``genre-worker`` processes (Celery, prefork) through Redis, broker and result backend both.

``app`` builds the Celery app, ``tasks`` is what a worker runs, ``store`` publishes model
artifacts through Redis, ``jobs`` is the bot's side and ``worker`` the ``genre-worker`` command.
"""
