"""Warmup: LoRA training on a random fraction of the pool, one checkpoint per epoch (SPEC §2.1).

Uses the HF Trainer so that each ``checkpoint-<step>/`` holds the PEFT adapter, the AdamW state
(``optimizer.pt``), the scheduler and a per-step learning-rate log: the same layout teams get
from their own Trainer runs, which the indexer reads. Re-running continues from the last
checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from indexer.config import WarmupConfig
from indexer.fsutil import atomic_write_json
from indexer.jsonl import iter_examples
from indexer.model_io import load_base_model, load_tokenizer, resolve_device
from less_core.config import LoraSettings, TokenizationConfig
from less_core.data import TokenizedExample, collate, tokenize_example
from less_core.errors import ConfigError, DataError
from less_core.lora import attach_lora

log = logging.getLogger(__name__)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[TokenizedExample]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> TokenizedExample:
        return self.items[i]


class _LogProgress(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            log.info(
                "warmup step %d/%d epoch %.2f loss %.4f lr %.3g",
                state.global_step,
                state.max_steps,
                state.epoch or 0.0,
                logs["loss"],
                logs.get("learning_rate", 0.0),
            )


def sample_warmup_ids(ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded random ``fraction`` of the pool ids (at least one), in pool order."""
    n = max(1, round(fraction * len(ids)))
    chosen = set(random.Random(seed).sample(range(len(ids)), n))
    return [ids[i] for i in sorted(chosen)]


def run_warmup(
    model_dir: Path,
    pool_path: Path,
    output_dir: Path,
    lora: LoraSettings,
    warmup: WarmupConfig,
    tokenization: TokenizationConfig,
    device: str | None = None,
) -> Path:
    """Train LoRA on a random subset of the pool, saving one checkpoint per epoch.

    Returns:
        ``output_dir``, holding ``checkpoint-<step>/`` directories and ``warmup.json``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "lora": lora.to_dict(),
        "warmup": warmup.to_dict(),
        "tokenization": tokenization.to_dict(),
    }
    record = output_dir / "warmup.json"
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous.get("settings") != settings:
            raise ConfigError(
                f"{output_dir} holds a warmup with other settings; use a new directory"
            )
    tokenizer = load_tokenizer(model_dir)
    examples = list(iter_examples(pool_path))
    if not examples:
        raise DataError(f"{pool_path}: no examples")
    by_id = {e.id: e for e in examples}
    subset = sample_warmup_ids(list(by_id), warmup.fraction, warmup.seed)
    items, skipped = [], []
    for ex_id in subset:
        tok = tokenize_example(tokenizer, by_id[ex_id], tokenization.max_length)
        if tok.n_response_tokens > 0:
            items.append(tok)
        else:
            skipped.append(ex_id)
    if not items:
        raise DataError("no warmup example keeps a response token after truncation")
    atomic_write_json(
        record, {"settings": settings, "subset_ids": subset, "skipped_truncated": skipped}
    )
    log.info(
        "warmup on %d of %d pool examples (%d skipped: response truncated)",
        len(items),
        len(examples),
        len(skipped),
    )

    train_lora(
        model_dir,
        items,
        output_dir,
        lora,
        warmup,
        tokenizer.pad_token_id,
        device=device,
        save_checkpoints=True,
    )
    return output_dir


def train_lora(
    model_dir: Path,
    items: list[TokenizedExample],
    output_dir: Path,
    lora: LoraSettings,
    warmup: WarmupConfig,
    pad_token_id: int,
    *,
    device: str | None = None,
    save_checkpoints: bool = True,
):
    """Train fresh LoRA adapters on tokenized examples with the HF Trainer.

    With ``save_checkpoints`` one ``checkpoint-<step>/`` (adapter, optimizer.pt, scheduler,
    per-step lr log) is written per epoch and an interrupted run resumes from the last one;
    without, nothing is written (evaluation runs).

    Returns:
        The trained PEFT model, in eval mode.
    """
    dev = resolve_device(device)
    torch.manual_seed(warmup.seed)
    model = attach_lora(load_base_model(model_dir, dev), lora)

    def collator(batch: list[TokenizedExample]) -> dict[str, torch.Tensor]:
        b = collate(batch, pad_token_id)
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=warmup.epochs,
        per_device_train_batch_size=warmup.batch_size,
        gradient_accumulation_steps=warmup.gradient_accumulation,
        learning_rate=warmup.learning_rate,
        lr_scheduler_type=warmup.lr_scheduler,
        warmup_steps=warmup.warmup_ratio,
        weight_decay=warmup.weight_decay,
        optim="adamw_torch",
        save_strategy="epoch" if save_checkpoints else "no",
        logging_strategy="steps",
        logging_steps=1,  # per-step lr log: checkpoint weights are the mean lr of each epoch
        seed=warmup.seed,
        data_seed=warmup.seed,
        bf16=warmup.bf16,
        use_cpu=dev.type == "cpu",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_ListDataset(items),
        data_collator=collator,
        callbacks=[_LogProgress()],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through logging instead
    resume = save_checkpoints and any(
        p.name.startswith("checkpoint-") for p in output_dir.iterdir()
    )
    trainer.train(resume_from_checkpoint=True if resume else None)
    return model.eval()
