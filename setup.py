"""Packaging for daam-datasets (also what Beam stages to remote workers with --setup_file)."""

from setuptools import find_packages, setup

setup(
    name="daam-datasets",
    version="0.1.0",
    description="Apache Beam pipeline that turns prompt corpora into DAAM attribution datasets",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "schemas", "schemas.*"]),
    package_data={"transforms": ["assets/*", "assets/classes/*", "assets/colour_world*/*", "assets/colour_world*/pipeline/*", "assets/colour_world*/pipeline/*/*"], "pipeline": ["templates/*", "preview/templates/*", "preview/static/*"]},
    install_requires=[
        "torch>=2.4,<3",
        "diffusers>=0.32,<0.43",
        # diffusers' recommended loading (low_cpu_mem_usage: weights into an empty model)
        "accelerate>=1.0,<2",
        "transformers>=5.0,<6",
        "apache-beam>=2.60,<3",
        "datasets>=4.0,<6",
        "webdataset>=1.0,<2",
        "pyarrow>=24,<26",
        "numpy>=1.26,<3",
        "fsspec",
        "pyyaml",
        "pillow",
        "huggingface_hub>=1.0",
        "filelock>=3.12",
        "jinja2>=3.1",
    ],
    extras_require={
        # matplotlib: the preview tests; import-linter: the layer contracts; hypothesis: property tests;
        # moto[server] + s3fs: --output s3:// against a real S3 API server on localhost
        "test": ["pytest>=8", "matplotlib>=3.7", "import-linter>=2.0", "hypothesis>=6.100", "moto[server]>=5", "s3fs"],
        # --runner dask: Beam's DaskRunner on a local cluster, SLURM (dask-jobqueue) or any scheduler;
        # bokeh serves the Dask dashboard. One GPU per worker uses dask-cuda when installed (optional).
        "dask": ["apache-beam[dask]>=2.60,<3", "dask-jobqueue>=0.8,<1", "bokeh>=3.1"],
        "gcs": ["gcsfs"],
        "s3": ["s3fs"],
        # `daam-datasets preview` and transforms.attribution.overlay: matplotlib colour maps
        "preview": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["daam-datasets=pipeline.cli:main"]},
)
