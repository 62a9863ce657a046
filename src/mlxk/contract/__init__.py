"""The JSON contract (spec 0.1.7): envelope, error types, exit codes, response models."""

from mlxk.contract.envelope import Envelope, MlxkError, exit_code_for

__all__ = ["Envelope", "MlxkError", "exit_code_for"]
