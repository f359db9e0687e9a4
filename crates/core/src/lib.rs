//! Core of onnx-diagnostic: the tensor, symbolic shapes, the graph IR and the export engine.
