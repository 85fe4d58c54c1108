"""`l2b-mask-train`: the published SpecTf recipe, on files too large for memory, resumable.

Recipe (shared/notes/training-data.md): architecture from the model specification,
cross-entropy on cloud versus clear (shadow is clear), schedule-free AdamW (the `schedulefree`
package) with a linear warm-up, gradient norm clipped to 1.0, batch 256, seed 42. Spectra are
streamed by blocks in a seeded shuffled order (`dataset.SpectraStream`), so an epoch's batches
are a function of (seed, epoch) alone: a run stopped by SIGTERM or Ctrl-C writes a checkpoint
(weights, optimizer, random state, position in the epoch) and `--resume` replays the epoch's
order up to that batch, which on the CPU gives bit-for-bit the weights of an unstopped run.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from schedulefree import AdamWScheduleFree
from torch.nn.utils import clip_grad_norm_

from l2b_mask.algorithm.inference import resolve_device
from l2b_mask.algorithm.model import SpecTf
from l2b_mask.errors import ExitCode, InputProductError, L2BMaskError, OutputError, UsageError
from l2b_mask.spec import ModelSpec, sha256_of
from l2b_mask.training import metrics
from l2b_mask.training.dataset import (
    BLOCK_ROWS,
    SHUFFLE_BLOCKS,
    LabelledData,
    SpectraStream,
    cloud_target,
)
from l2b_mask.training.files import ensure_folder, write_atomic, write_json, write_text
from l2b_mask.training.progress import Progress, StopRequest
from l2b_mask.training.record import TrainInputs, training_record

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"
METRICS = "metrics.csv"
RECORD = "training.json"
METRIC_COLUMNS = ("epoch", "train_loss", "test_loss", "test_f1", "test_auc")
#: what `Trainer.checkpoint` writes: a file without them is not one (an input error, exit 4)
CHECKPOINT_KEYS = frozenset({"format", "model", "optimizer", "torch_rng", "cuda_rng", "epoch",
                             "batches_done", "loss_sum", "seen", "rows", "epoch_seconds",
                             "epoch_elapsed", "settings", "datasets"})
#: settings a resumed run may change; any other must equal the checkpoint's
RESUMABLE_CHANGES = frozenset({"epochs", "device", "save_every_epoch", "eval_batch"})


class TrainingInterrupted(L2BMaskError):
    """SIGTERM or Ctrl-C: the checkpoint is written, `--resume` continues."""

    exit_code = ExitCode.INTERRUPTED


class TrainSettings(BaseModel):
    """The training run's settings, recorded in training.json and in each checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(50, ge=1, description="Passes over the training scenes (published: 30-50).")
    batch: int = Field(256, ge=1, description="Spectra per optimiser step (published: 256).")
    lr: float = Field(1e-4, gt=0, description="Schedule-free AdamW learning rate (published 1e-4).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the attention and "
                           "feed-forward outputs while training (published 0.1; 0.05 in the "
                           "README's reproduction).")
    seed: int = Field(42, description="Seeds the initial weights, dropout and the data order.")
    warmup_steps: int = Field(1000, ge=0, description="Linear learning-rate warm-up, in steps "
                              "(published 1000).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip (published 1.0).")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    threads: int | None = Field(None, ge=1, description="CPU threads of torch (default: torch's "
                                "choice). On a shared machine fewer threads can be much faster; "
                                "a bit-exact --resume needs the same count.")
    save_every_epoch: bool = Field(False, description="Also keep weights_epochNNN.pt per epoch.")
    block_rows: int = Field(BLOCK_ROWS, ge=1, description="Spectra read from a file at once.")
    shuffle_blocks: int = Field(SHUFFLE_BLOCKS, ge=1, description="Blocks mixed per shuffle "
                                "window; memory is about block_rows x shuffle_blocks spectra.")
    eval_batch: int = Field(4096, ge=1, description="Spectra per batch of the epoch's test pass.")


def add_dropout(model: SpecTf, p: float) -> None:
    """Dropout on each encoder layer's attention and feed-forward outputs, active in train()
    mode only. Hooks hold no parameters, so the state_dict keeps the official keys."""
    if p <= 0:
        return
    for layer in model.layers:
        for sub in (layer.attention, layer.ff):
            sub.register_forward_hook(lambda m, args, out: F.dropout(out, p, m.training))


class Trainer:
    """The model, its optimiser and the position in the run: everything a checkpoint holds."""

    def __init__(self, spec: ModelSpec, settings: TrainSettings, device: torch.device,
                 bands_nm: np.ndarray) -> None:
        torch.manual_seed(settings.seed)
        self.settings, self.device = settings, device
        self.model = SpecTf(spec).to(device)
        add_dropout(self.model, settings.dropout)
        self.band_term = self.model.band_term(bands_nm).to(device)
        self.optimizer = AdamWScheduleFree(self.model.parameters(), lr=settings.lr,
                                           warmup_steps=settings.warmup_steps)
        self.epoch = 0          # epochs completed
        self.batches_done = 0   # batches of the current epoch already trained
        self.loss_sum, self.seen = 0.0, 0
        self.rows: list[dict[str, Any]] = []
        self.epoch_seconds: list[float] = []
        self.epoch_elapsed = 0.0  # seconds already spent in the current epoch (before a resume)

    def step(self, spectra: np.ndarray, labels: np.ndarray) -> float:
        x = torch.from_numpy(spectra).to(self.device)
        y = torch.from_numpy(cloud_target(labels)).to(self.device)
        loss = F.cross_entropy(self.model.logits(x, self.band_term), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        value = float(loss.detach())
        self.loss_sum += value * len(labels)
        self.seen += len(labels)
        return value

    def train_mode(self) -> None:
        self.model.train()
        self.optimizer.train()

    def eval_mode(self) -> None:
        self.model.eval()
        self.optimizer.eval()

    @torch.inference_mode()
    def test(self, stream: SpectraStream, threshold: float) -> dict[str, float | None]:
        """Test loss, F1 at the specification's threshold (P >= t) and ROC AUC."""
        loss_sum, probability, labels = 0.0, [], []
        batch = self.settings.eval_batch
        for spectra, block_labels in stream.blocks_in_order():
            for s in range(0, len(block_labels), batch):
                x = torch.from_numpy(spectra[s:s + batch]).to(self.device)
                y = torch.from_numpy(cloud_target(block_labels[s:s + batch])).to(self.device)
                logits = self.model.logits(x, self.band_term).float()
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                probability.append(torch.softmax(logits, -1)[:, 1].cpu().numpy())
            labels.append(block_labels)
        cloud = cloud_target(np.concatenate(labels)).astype(bool)
        found = metrics.at_threshold(cloud, np.concatenate(probability), threshold)
        return {"test_loss": loss_sum / cloud.size, "test_f1": found["f1"],
                "test_auc": found["roc_auc"]}

    def weights(self) -> dict[str, torch.Tensor]:
        """A state_dict on the CPU with the official key names (call in eval mode)."""
        return {k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()}

    def checkpoint(self, meta: dict[str, Any]) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {"format": 1, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
                "epoch": self.epoch, "batches_done": self.batches_done,
                "loss_sum": self.loss_sum, "seen": self.seen, "rows": self.rows,
                "epoch_seconds": self.epoch_seconds, "epoch_elapsed": self.epoch_elapsed, **meta}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        self.epoch, self.batches_done = ckpt["epoch"], ckpt["batches_done"]
        self.loss_sum, self.seen = ckpt["loss_sum"], ckpt["seen"]
        self.rows, self.epoch_seconds = list(ckpt["rows"]), list(ckpt["epoch_seconds"])
        self.epoch_elapsed = float(ckpt["epoch_elapsed"])


def save_torch(path: Path, obj: Any) -> Path:
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def metrics_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in METRIC_COLUMNS})
    return out.getvalue()


def load_checkpoint(path: Path, settings: TrainSettings, digests: list[dict[str, Any]],
                    device: torch.device) -> dict[str, Any]:
    """The checkpoint to resume from, refused when the data or the recipe changed."""
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint {path}")
    try:  # weights_only: tensors and plain values, never code (a crafted pickle is refused)
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one error line
        raise InputProductError(path, f"checkpoint unreadable or not plain data "
                                      f"({type(exc).__name__}): --resume refused") from None
    missing = CHECKPOINT_KEYS - set(ckpt) if isinstance(ckpt, dict) else CHECKPOINT_KEYS
    if missing:
        raise InputProductError(path, f"not a checkpoint of l2b-mask-train (lacks "
                                      f"{', '.join(sorted(missing))}): --resume refused")
    saved = ckpt.get("settings", {})
    changed = sorted(k for k, v in settings.model_dump().items()
                     if k not in RESUMABLE_CHANGES and saved.get(k) != v)
    if changed:
        raise UsageError(f"--resume: {', '.join(changed)} differ from the checkpoint's "
                         f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
    old = {d["sha256"] for d in ckpt.get("datasets", [])}
    for d in digests:
        if d["sha256"] not in old:
            raise InputProductError(d["path"], "is not a data set the checkpoint was trained on")
    return ckpt


def _train_epoch(trainer: Trainer, stream: SpectraStream, stop: StopRequest,
                 progress: Progress) -> bool:
    """Train the rest of the current epoch; False when a stop was requested."""
    s = trainer.settings
    rng = np.random.default_rng([s.seed, trainer.epoch])
    trainer.train_mode()
    progress.start_epoch(trainer.epoch + 1, trainer.seen)
    for k, (spectra, labels) in enumerate(stream.batches(s.batch, rng)):
        if k < trainer.batches_done:
            continue  # replayed after --resume: the same order, already trained
        progress.update(len(labels), trainer.step(spectra, labels))
        trainer.batches_done = k + 1
        if stop.requested:
            return False
    return True


def _finish_epoch(trainer: Trainer, test: SpectraStream, spec: ModelSpec, outdir: Path,
                  meta: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Test metrics, metrics.csv, the epoch checkpoint (taken in eval mode, as the optimiser
    asks) and, on request, the epoch's weights."""
    trainer.eval_mode()
    row = {"epoch": trainer.epoch + 1, "train_loss": trainer.loss_sum / max(trainer.seen, 1),
           **trainer.test(test, spec.threshold)}
    trainer.rows.append(row)
    trainer.epoch_seconds.append(seconds)
    trainer.epoch, trainer.batches_done, trainer.loss_sum, trainer.seen = trainer.epoch + 1, 0, 0.0, 0
    trainer.epoch_elapsed = 0.0
    write_text(outdir / METRICS, metrics_csv(trainer.rows))
    save_torch(outdir / CHECKPOINT, trainer.checkpoint(meta))
    if trainer.settings.save_every_epoch:
        save_torch(outdir / f"weights_epoch{trainer.epoch:03d}.pt", trainer.weights())
    return row


def _interrupted(outdir: Path, stop: StopRequest) -> TrainingInterrupted:
    return TrainingInterrupted(outdir / CHECKPOINT, f"{stop.signal_name}: checkpoint written; "
                                                    "continue with --resume")


def _prepare_outdir(inputs: TrainInputs) -> Path:
    outdir = ensure_folder(inputs.outdir)
    if not inputs.resume and (outdir / CHECKPOINT).exists():
        raise OutputError(outdir, f"holds a training run ({CHECKPOINT}): --resume it or choose "
                                  "another folder")
    return outdir


def train(inputs: TrainInputs, settings: TrainSettings,
          progress_tty: bool | None = None) -> dict[str, Any]:
    """The whole run; returns the training.json document. Raises TrainingInterrupted (exit 8)
    after writing the checkpoint when SIGTERM or Ctrl-C arrives."""
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _train(inputs, settings, progress_tty)
    finally:
        torch.set_num_threads(threads)


def _train(inputs: TrainInputs, settings: TrainSettings, progress_tty: bool | None) -> dict[str, Any]:
    t_start = time.monotonic()
    spec = ModelSpec.load(inputs.spec)
    device = resolve_device(settings.device)
    with LabelledData(list(inputs.datasets), spec, settings.block_rows) as data:
        train_split, test_split = data.split(inputs.train_csv), data.split(inputs.test_csv)
        data.check_disjoint(train_split, test_split)
        for split in (train_split, test_split):  # before training: not after an epoch
            data.check_finite(split)
        outdir = _prepare_outdir(inputs)
        digests = [{"path": str(f.path), "sha256": sha256_of(f.path), "rows": f.rows}
                   for f in data.files]
        meta = {"settings": settings.model_dump(), "datasets": digests}
        trainer = Trainer(spec, settings, device, data.bands_nm)
        resumed = None
        if inputs.resume:
            trainer.restore(load_checkpoint(outdir / CHECKPOINT, settings, digests, device))
            resumed = {"epoch": trainer.epoch, "batch": trainer.batches_done}
        stream = data.stream(train_split, settings.shuffle_blocks)
        test = data.stream(test_split)
        progress = Progress(settings.epochs, train_split.rows, tty=progress_tty)
        with StopRequest() as stop:
            while trainer.epoch < settings.epochs:
                t0 = time.monotonic() - trainer.epoch_elapsed  # a resumed epoch's earlier part
                if not _train_epoch(trainer, stream, stop, progress):
                    progress.close()
                    trainer.epoch_elapsed = time.monotonic() - t0
                    save_torch(outdir / CHECKPOINT, trainer.checkpoint(meta))
                    raise _interrupted(outdir, stop)
                progress.end_epoch(_finish_epoch(trainer, test, spec, outdir, meta,
                                                 time.monotonic() - t0))
                if stop.requested and trainer.epoch < settings.epochs:
                    raise _interrupted(outdir, stop)  # the epoch's checkpoint is written
        trainer.eval_mode()
        weights = save_torch(outdir / WEIGHTS, trainer.weights())
        record = training_record(
            inputs=inputs, spec=spec, settings=meta["settings"], digests=digests,
            counts={"train_spectra": train_split.rows, "test_spectra": test_split.rows,
                    "skipped_nonfinite_train": stream.skipped,
                    "skipped_nonfinite_test": test.skipped},
            bands=int(data.bands_nm.size), device=device, rows=trainer.rows,
            epoch_seconds=trainer.epoch_seconds, run_seconds=time.monotonic() - t_start,
            resumed=resumed, weights=weights)
        write_json(outdir / RECORD, record)
    return record
