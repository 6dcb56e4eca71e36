"""The study runner: the only code (besides the CLI) that sees the whole study config.

It expands the study into runs (budget x horizon x seed, HPO cells), prepares each run's
data from the stages, owns run directories and resumption, and executes phases.
"""

# The phases of a study, in execution order (light to import: the CLI needs it at start-up).
PHASES = ("data", "features", "hpo", "final", "evaluate", "scaling", "report")
