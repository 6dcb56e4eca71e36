"""The table of `finscale` commands: name -> one-line help, in the order `--help` lists them.

Kept free of imports so ``finscale --help`` can list every command without importing any
command module (those pull in pandas/torch: seconds). Each command module registers its
parser with ``help=COMMANDS[name]``, so the two listings cannot drift apart.
"""

COMMANDS: dict[str, str] = {
    "run": "run the study: data -> features -> hpo -> final -> evaluate -> scaling -> report",
    "status": "state of every HPO cell and final run of the study",
    "config": "show the resolved study config and every study key",
    "data": "fetch, verify and list stored datasets",
    "features": "build and inspect feature sets",
    "splits": "inspect train/validation/test splits",
    "model": "PatchTST architectures, parameter budgets, compute",
    "train": "train one final run (budget x horizon x seed)",
    "hpo": "hyperparameter search per budget x horizon cell (Optuna)",
    "evaluate": "evaluate finished final runs on the test split (the evaluate phase)",
    "scaling": "fit scaling laws to external points (finscale scaling fit POINTS.csv)",
    "report": "build the study report (Markdown, HTML, figures, CSV) from run directories",
    "predict": "score new daily bars with a finished run's checkpoint (finscale predict RUN_DIR)",
    "export": "write one reproduction script per final run (paper appendix)",
    "monitor": "print live hardware/thermal readings",
    "doctor": "check Python, torch devices, TA-Lib, optional packages, sensors, disk/memory, "
              "stored data and the Optuna storage",
}
