"""Which of MSeg's four evaluation combinations applies (MSEG_REFERENCE.md §7.1), and what it needs.

A model's taxonomy (universal, naive, or a dataset's own) and a dataset decide: the shards that hold
the ground truth (the dataset's own labels, or its labels converted to universal ids), the evaluation
classes, the matrix that maps the model's softmax onto them (§2.6 universal -> test, §2.7 naive ->
test by exact lower-cased name), the classes left out of the means (§7.6), and MSeg's output folder
name (§7.4). The matrices come from the same taxonomy code as the shard lookup tables, so training
and evaluation cannot disagree on a class id. A pairing MSeg does not define is refused, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mseg_fast import taxonomy
from mseg_fast.apiroot import dataset_lists_dir, master_tsv_path
from mseg_fast.constants import IGNORE_LABEL
from mseg_fast.datasets import RELABELED_TRAIN, TEST_DATASETS, UNRELABELED_TRAIN
from mseg_fast.errors import UserError
from mseg_fast.targets import naive_class_names


@dataclass(frozen=True)
class EvalPlan:
    """What evaluating one model on one dataset takes.

    combination: "zero-shot" (universal -> test set), "universal" (universal on a training set),
        "naive" (naive -> test set) or "oracle" (a dataset's own model on it).
    label_taxonomy: the shard taxonomy folder with the ground truth ("self" or "universal").
    projection: K_eval x K_model float matrix applied to the softmax, or None.
    excluded: evaluation classes left out of mIoU and mAcc.
    folder: MSeg's results folder name for the dataset.
    relabeled: score with MSeg's relabeled protocol (§7.6), which needs each image's relabeled label.
    """

    dataset: str
    combination: str
    label_taxonomy: str
    class_names: tuple[str, ...]
    projection: np.ndarray | None
    excluded: tuple[int, ...]
    folder: str
    relabeled: bool = False


def naive_test_matrix(naive: tuple[str, ...], test_names: tuple[str, ...]) -> np.ndarray:
    """K_t x 316: test class i receives naive class j only when their lower-cased names are equal (§2.7)."""
    index = {name.lower(): j for j, name in enumerate(naive) if name}
    matrix = np.zeros((len(test_names), len(naive)), np.float32)
    for i, name in enumerate(test_names):
        if name.lower() in index:
            matrix[i, index[name.lower()]] = 1.0
    return matrix


def _names(api_root: Path, dataset: str) -> tuple[str, ...]:
    path = dataset_lists_dir(api_root) / dataset / f"{dataset}_names.txt"
    if not path.is_file():
        raise UserError(f"no class names for dataset '{dataset}' at {path}: name one of MSeg's test sets "
                        f"({', '.join(TEST_DATASETS)}) or training sets ({', '.join(UNRELABELED_TRAIN)})")
    return taxonomy.read_names(path)


def plan_evaluation(model_taxonomy: str, model_classes: int, dataset: str, api_root: Path,
                    tsv_path: Path | None = None, trained_on: tuple[str, ...] = (),
                    relabeled: bool = False) -> EvalPlan:
    """The evaluation of a model of `model_taxonomy` ("universal", "naive" or "self") with `model_classes`
    outputs on `dataset`.

    MSeg decides by name (its 6 test sets are zero-shot, its training sets universal). Datasets of your own
    follow the same rule by role: one the model was trained on (`trained_on`, read from a mseg-fast model
    file) is scored in universal ids; one it never saw, with a column in the TSV, zero-shot. `relabeled` (a
    model trained on relabeled labels) selects the relabeled protocol on training sets that have relabeled
    labels (§7.6).

    Raises:
        UserError: the model's taxonomy cannot be mapped to the dataset's, with the reason.
    """
    names = _names(api_root, dataset)
    if model_taxonomy == "universal":
        tsv = taxonomy.read_master_tsv(tsv_path or master_tsv_path(api_root))
        universal = taxonomy.universal_names(tsv)
        if model_classes != len(universal):
            raise UserError(f"the model has {model_classes} classes, the universal taxonomy {len(universal)}")
        unseen = dataset not in trained_on and dataset not in UNRELABELED_TRAIN + RELABELED_TRAIN
        if dataset in TEST_DATASETS or (unseen and tsv.has_column(dataset)):
            return EvalPlan(dataset, "zero-shot", "self", names,
                            taxonomy.test_matrix(tsv, dataset, names).astype(np.float32), (), dataset)
        if dataset in UNRELABELED_TRAIN or dataset in trained_on:
            table = taxonomy.universal_table(tsv, dataset, names)
            reached = set(table[:len(names)].tolist()) - {IGNORE_LABEL}
            excluded = tuple(k for k in range(len(universal)) if k not in reached)
            if relabeled and f"{dataset}-relabeled" in RELABELED_TRAIN:
                return EvalPlan(dataset, "universal", "universal", universal, None, excluded,
                                f"{dataset}_universal_relabeled", relabeled=True)
            return EvalPlan(dataset, "universal", "universal", universal, None, excluded, f"{dataset}_universal")
        raise UserError(f"a universal model is scored on MSeg's test sets ({', '.join(TEST_DATASETS)}), on the "
                        f"unrelabeled training sets ({', '.join(UNRELABELED_TRAIN)}), on its own training sets, or "
                        f"on a dataset with a column in the TSV; '{dataset}' is none of these")
    if model_taxonomy == "naive":
        if dataset not in TEST_DATASETS:
            raise UserError(f"a naive-merge model is scored on MSeg's test sets ({', '.join(TEST_DATASETS)}) only "
                            f"(§7.1); '{dataset}' is not one")
        naive = naive_class_names(api_root)
        if model_classes != len(naive):
            raise UserError(f"the model has {model_classes} classes, the naive taxonomy {len(naive)}")
        return EvalPlan(dataset, "naive", "self", names, naive_test_matrix(naive, names), (), dataset)
    if model_taxonomy == "self":
        if model_classes != len(names):
            raise UserError(f"the model has {model_classes} classes and {dataset} has {len(names)}: an oracle "
                            f"model is scored on its own dataset only")
        return EvalPlan(dataset, "oracle", "self", names, None, (), dataset)
    raise UserError(f"unknown model taxonomy '{model_taxonomy}': universal, naive or self")
