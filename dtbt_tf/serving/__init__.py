"""Clients of a TF Serving model server running an exported DOAnet."""
from dtbt_tf.serving.client import grpc_predict, grpc_request, parse_rest_response, rest_predict, rest_request

__all__ = ["grpc_predict", "grpc_request", "parse_rest_response", "rest_predict", "rest_request"]
