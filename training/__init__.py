"""Training: dataset specs become fitted, evaluated scikit-learn pipelines published as model bundles."""
