"""The task verbs (``task=fit | validate | predict | export | score | ensemble | retrieve | odqa``, and ``stages:``).

Each verb builds what it needs from the composed config (``tasks/build.py``), runs it with Lightning or a
retriever, and writes the run files. ``main.py`` only composes the config and calls :func:`tasks.runner.run_task`.
"""
