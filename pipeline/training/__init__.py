"""Training heads on cached features: no transformer is loaded (pipeline.embedding and
transformers are never imported here).

features/stream/subword: where a batch of features comes from (the FeatureSource protocol);
data: labels, splits and baselines of a task on a cache; heads: head modules and the head
directory; sequence/crf: heads that read whole examples; examples: examples as padded
batches; loop (with sequence_loop): the one training loop; decode: labels and probabilities
of word rows under any head (decode_words); fit and sweep: the commands; plots: their figures.
"""

from pipeline.training.data import EvalSplit, TaskData, prepare, split_examples, split_rows
from pipeline.training.features import FeatureSource, Features
from pipeline.training.decode import decode_words
from pipeline.training.examples import Sequences
from pipeline.training.fit import fit
from pipeline.training.heads import (HeadConfig, SavedHead, build_head, head_logits,
                                     is_sequence, load_head, mix_weights, predict_rows)
from pipeline.training.loop import TrainOptions, Trainee, new_trainee, train
from pipeline.training.layers import parse_fit_layers
from pipeline.training.stream import StreamedFeatures, load_features, parse_size
from pipeline.training.subword import RowFeatures, WordMean, load_word_features, word_features
from pipeline.training.sweep import format_table, sweep

__all__ = ["EvalSplit", "FeatureSource", "Features", "HeadConfig", "RowFeatures", "SavedHead",
           "Sequences", "StreamedFeatures", "TaskData", "TrainOptions", "Trainee", "WordMean",
           "build_head", "decode_words", "fit", "format_table", "head_logits", "is_sequence",
           "load_features", "load_head",
           "load_word_features", "mix_weights", "new_trainee", "parse_fit_layers",
           "parse_size", "predict_rows", "prepare", "split_examples", "split_rows", "sweep",
           "train", "word_features"]
