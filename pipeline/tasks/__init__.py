"""Tasks: what turns the stored tokens of a cache into one label per token.

registry: Task, TokenView, the registry and finding a task by name; computed: the tasks
computed from a cache alone; labelling: computing them on a cache; control: the control task.
"""

from pipeline.tasks import computed  # noqa: F401  (registers the computed tasks)
from pipeline.tasks.computed import LENGTH_BUCKETS, LETTERS, NO_LETTER, word_labels
from pipeline.tasks.control import control_labels, word_type_keys
from pipeline.tasks.labelling import (cache_view, compute_labels, first_subtokens, label_cache,
                                      split_per_shard, token_words)
from pipeline.tasks.registry import (IGNORE, TASKS, Task, TaskError, TokenView, check_task_name,
                                     file_task, get_task, no_labels_message, register)

COMPUTED = sorted(TASKS)  # tasks labelled from the cache alone (`pipeline label --task NAME`)

__all__ = ["COMPUTED", "IGNORE", "LENGTH_BUCKETS", "LETTERS", "NO_LETTER", "TASKS", "Task",
           "TaskError", "TokenView", "cache_view", "check_task_name", "compute_labels",
           "control_labels", "file_task", "first_subtokens", "get_task", "label_cache",
           "no_labels_message", "register", "split_per_shard", "token_words", "word_labels",
           "word_type_keys"]
