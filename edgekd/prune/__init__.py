"""The prune stage's algorithm: structured channel pruning (Torch-Pruning) with channel counts on the
target's fast multiple, latency-guided per-group ratios, 2:4 sparsity for TensorRT, KD recovery and
the gate that ships a pruned artifact only when it is measurably faster.

- `groups`: the model's channel groups (DepGraph) and the layers that cannot be pruned, with why;
- `channels`: channel plans (uniform, global ranking) and applying one (`prune_channels`);
- `importance`: Torch-Pruning importance criteria by name (magnitude, taylor, bn_scale, lamp);
- `latency_guided`: NetAdapt-style per-group plan toward a latency goal on the target;
- `target_latency`: latency callables for that search (measured on OpenVINO, or predicted);
- `sparse_2_4`, `sparse_onnx`: 2:4 masks on the layers TensorRT accelerates, and their check in ONNX;
- `recovery`: fine-tuning after pruning (KD, labels only, or none) with edgekd.training.fit;
- `gate`: ship or roll back, from both measurements;
- `check`: the recipe's `prune` section checked against the target before any work.

Importing this package imports nothing heavy; Torch-Pruning and ModelOpt load with their modules.
"""
