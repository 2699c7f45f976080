"""Layer 6, serving: any trained model exported as a TensorFlow SavedModel that decodes image bytes in the graph
(:func:`vggtransfer.serving.export.export_saved_model`).
"""
