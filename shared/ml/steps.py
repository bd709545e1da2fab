"""The mesh's own scikit-learn steps. A saved model names them by import path (skops records each object's
class), so they live here, apart from the configuration modules that every service imports: those stay free
of scikit-learn, which only processes that fit, load or score models hold.

Models saved before the move name ``shared.ml.features.FeatureTransformer`` and
``shared.ml.estimators.EncodedLabels``: both modules hand these classes out under those names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.preprocessing import LabelEncoder

from shared.ml.features import FeaturePipeline, as_polars


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """The feature pipeline as the first step of a scikit-learn Pipeline, so a logged model takes raw records.

    It is fitted by the features service (its state comes from the feature set); ``fit`` here is a no-op
    so wrapping an already-trained estimator does not refit anything.
    """

    def __init__(self, pipeline: dict[str, Any] | None = None) -> None:
        self.pipeline = pipeline

    def _pipeline(self) -> FeaturePipeline:
        # Built once per process: validating the spec on every request would cost more than the model.
        compiled: FeaturePipeline | None = self.__dict__.get("_compiled")
        if compiled is None:
            if self.pipeline is None:
                raise RuntimeError("FeatureTransformer has no pipeline")
            compiled = FeaturePipeline.from_dict(self.pipeline)
            self.__dict__["_compiled"] = compiled
        return compiled

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_compiled"}

    def fit(self, X: Any, y: Any = None) -> FeatureTransformer:
        return self

    def transform(self, X: Any) -> np.ndarray:
        pipeline = self._pipeline()
        frame = as_polars(X, pipeline.spec.input_columns, pipeline.schema)
        return pipeline.transform(frame).to_numpy().astype(np.float64, copy=False)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self._pipeline().output_columns, dtype=object)


class EncodedLabels(ClassifierMixin, BaseEstimator):
    """A classifier that only learns labels 0..k-1 (XGBoost), taught and answering in the real labels."""

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> EncodedLabels:
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        self.estimator_ = clone(self.estimator).fit(X, encoder.transform(y))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(self.estimator_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
