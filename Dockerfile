# Worker (and launcher) image for Dataflow with GPUs: the Beam Python SDK image plus CUDA torch
# and daam-datasets. Build and push, then pass --sdk_container_image (see docs/dataflow.md).
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/daam-datasets:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/daam-datasets:0.1.0
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

WORKDIR /opt/daam-datasets
COPY setup.py constraints.txt README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms
COPY schemas ./schemas

# PyPI's Linux torch wheels bundle the CUDA runtime; the NVIDIA driver comes from Dataflow
# (worker_accelerator=...;install-nvidia-driver). Install torch first, alone.
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt ".[gcs]" \
 && python -c "import torch, diffusers, apache_beam; print('torch', torch.__version__)"

# Build the tiny model into the image so smoke tests on Dataflow need no hub access.
ENV DAAM_DATASETS_CACHE=/opt/daam-datasets/cache
RUN python -c "from transforms.tiny_model import tiny_model_path; print(tiny_model_path())"

ENTRYPOINT ["/opt/apache/beam/boot"]
