"""Worker of tests/test_training.py::test_mirrored_strategy_matches_single_device, run by path in a fresh process
(two logical CPU devices must be configured before TensorFlow starts).

    python tests/_mirrored_worker.py BATCH.npz DOANET_KWARGS_JSON

BATCH.npz holds x, doa, active, track_id (the test's seeded batch). Trains one SGD step with the default and the
mirrored strategy from the same initial weights and prints one JSON line: per strategy the replica count, the
loss and the weights after the step.
"""
import json
import sys

import numpy as np
import tensorflow as tf


def main(batch_path, doanet_kwargs):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from dtbt_tf.config import DoanetConfig, LossConfig
    from dtbt_tf.models.doanet import build_doanet
    from dtbt_tf.models.hnet import build_hnet
    from dtbt_tf.training import DoaTrainer, make_strategy

    batch = np.load(batch_path)
    x = batch["x"]
    y = {k: batch[k] for k in ("doa", "active", "track_id")}
    hnet = build_hnet(2, units=8)
    out = {}
    for name in ("default", "mirrored"):
        strategy = make_strategy(name)
        with strategy.scope():
            keras.utils.set_random_seed(0)
            doanet = build_doanet(DoanetConfig(**doanet_kwargs))
            for layer in doanet.layers:  # frozen BN: per-replica batch statistics would differ from the full batch
                if layer.name.startswith("bn"):
                    layer.trainable = False
            trainer = DoaTrainer(doanet, hnet, LossConfig())
            trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        hist = trainer.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)), epochs=1, verbose=0)
        out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": hist.history["loss"][0],
                     "weights": [w.tolist() for w in doanet.get_weights()]}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
