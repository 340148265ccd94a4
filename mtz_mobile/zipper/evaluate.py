"""Per-task test error of the original models and of the zipped network."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from mtz_mobile.data import TaskData, error_rate, load_specs
from mtz_mobile.graph.model_files import load_original
from mtz_mobile.markdown import markdown_table
from .plan import ZipDir, load_zip_dir


@dataclass
class TaskEvaluation:
    task: str
    data: str
    samples: int
    original_error: float
    zipped_error: float

    @property
    def increase_pp(self) -> float:
        return 100.0 * (self.zipped_error - self.original_error)


def evaluate_zip(zipdir: ZipDir, datas: dict[str, TaskData] | None = None, data_dir=None,
                 limit: int | None = None) -> list[TaskEvaluation]:
    """Test error of every task, original model (from sources/) vs zipped network."""
    results = []
    settings = zipdir.plan.settings
    given = datas or {}
    missing = [task for task in zipdir.plan.tasks if not given.get(task.name)]
    loaded = dict(zip((task.name for task in missing), load_specs((task.data for task in missing), data_dir)))
    for task in zipdir.plan.tasks:
        data = given.get(task.name) or loaded[task.name]
        if settings.get("max_error_increase") is not None and "validation_samples" in settings:
            # a 0.1 zip's search chose its counts on some test images: report on the rest
            data, _ = data.split_test_validation(settings["validation_samples"], seed=settings["seed"])
        x, y = data.x_test[:limit], data.y_test[:limit]
        original = load_original(zipdir.source_path(task.name))   # Keras, or ONNX in onnxruntime
        orig_err = error_rate(original.predict(x, batch_size=4096, verbose=0), y)
        zipped_err = error_rate(zipdir.network.predict(task.name, x), y)
        results.append(TaskEvaluation(task.name, task.data, len(y), orig_err, zipped_err))
    return results


def evaluate_dir(path: str | os.PathLike, data_dir=None, limit: int | None = None) -> list[TaskEvaluation]:
    return evaluate_zip(load_zip_dir(path), data_dir=data_dir, limit=limit)


def evaluation_table(results: list[TaskEvaluation]) -> str:
    return markdown_table(["task", "data", "test images", "original error", "zipped error", "change"],
                          [[r.task, r.data, r.samples, f"{100 * r.original_error:.2f} %",
                            f"{100 * r.zipped_error:.2f} %", f"{r.increase_pp:+.2f} pp"] for r in results])


def evaluation_json(results: list[TaskEvaluation]) -> list[dict]:
    return [dict(asdict(r), increase_pp=r.increase_pp) for r in results]
