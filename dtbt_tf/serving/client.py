"""TF Serving clients for an exported DOAnet: REST with the standard library, gRPC with the optional
tensorflow-serving-api package (docs/deployment.md). No TensorFlow import for REST."""
from __future__ import annotations

import json

import numpy as np

from dtbt_tf.features import N_AUDIO_CHANNELS


def rest_request(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8501,
                 signature: str = "from_audio") -> tuple[str, bytes]:
    """URL and JSON body of a TF Serving REST predict call on one file: ``{"signature_name": signature,
    "inputs": {"audio": [[[w, y, z, x], ...]]}}`` (columnar format, batch 1, samples as 6-digit floats)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[1] != N_AUDIO_CHANNELS:
        raise ValueError(f"audio must have shape (samples, 4), got {audio.shape}")
    rows = ",".join("[" + ",".join(f"{v:.6g}" for v in row) + "]" for row in audio.tolist())
    body = f'{{"signature_name": {json.dumps(signature)}, "inputs": {{"audio": [[{rows}]]}}}}'
    return f"http://{host}:{port}/v1/models/{model_name}:predict", body.encode()


def parse_rest_response(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(doa (F, N, 3), activity (F, N)) of batch item 0 from a REST predict response (``{"outputs": {...}}``)."""
    try:
        out = json.loads(body)["outputs"]
        doa, act = np.asarray(out["doa"], np.float32)[0], np.asarray(out["activity"], np.float32)[0]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"unexpected TF Serving response ({type(e).__name__}: {str(body[:200])})") from None
    return doa, act


def rest_predict(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8501,
                 signature: str = "from_audio", timeout: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """POST :func:`rest_request` and parse the answer; ValueError with the server's message on failure."""
    import urllib.error
    import urllib.request

    url, body = rest_request(audio, model_name, host, port, signature)
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return parse_rest_response(resp.read())
    except urllib.error.HTTPError as e:
        raise ValueError(f"{url}: HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") from None
    except urllib.error.URLError as e:
        raise ValueError(f"{url}: cannot connect ({e.reason})") from None


def grpc_request(audio: np.ndarray, model_name: str, signature: str = "from_audio"):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for one file (needs tensorflow-serving-api)."""
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
    except ImportError:
        raise ValueError("gRPC needs tensorflow-serving-api: pip install --no-deps tensorflow-serving-api "
                         "(it requires the full `tensorflow` package otherwise)") from None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs["audio"].CopyFrom(tf.make_tensor_proto(np.asarray(audio, np.float32)[None]))
    return request


def grpc_predict(audio: np.ndarray, model_name: str, host: str = "localhost", port: int = 8500,
                 signature: str = "from_audio", timeout: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """Send :func:`grpc_request` to TF Serving's PredictionService; (doa (F, N, 3), activity (F, N))."""
    request = grpc_request(audio, model_name, signature)
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"{host}:{port}", options=[("grpc.max_send_message_length", 1 << 30),
                                                                ("grpc.max_receive_message_length", 1 << 30)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        result = stub.Predict(request, timeout)
    except grpc.RpcError as e:
        raise ValueError(f"{host}:{port}: gRPC {e.code().name}: {e.details()}") from None
    return tf.make_ndarray(result.outputs["doa"])[0], tf.make_ndarray(result.outputs["activity"])[0]
