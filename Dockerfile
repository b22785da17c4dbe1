# GPU image for rnnlab, with the tested stack: torch 2.13.0 (the CUDA build), the rest pinned by constraints.txt.
# Build:  docker build -t rnnlab .            (CUDA 12.8 wheels; another CUDA: --build-arg CUDA=cu126 ...)
# Run:    docker run --gpus all --shm-size 8g -v $PWD/data:/data -v $PWD/outputs:/app/outputs \
#           rnnlab python train.py experiment=ptb_awd trainer=gpu
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE}
ARG CUDA=cu128
ARG TORCH=2.13.0

RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && \
    rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    RNNLAB_DATA_DIR=/data \
    RNNLAB_CACHE_DIR=/app/.cache \
    PYTHONUNBUFFERED=1
WORKDIR /app

# torch from PyTorch's index for this CUDA, then everything else at the versions the results were measured with.
RUN pip install --no-cache-dir "torch==${TORCH}" --index-url "https://download.pytorch.org/whl/${CUDA}"
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt -e ".[plot,track]"
# the image holds the tested stack, or the build stops here
RUN python -c "import importlib.metadata as m, torch; \
pins = dict(l.strip().split('==') for l in open('constraints.txt') if '==' in l and not l.startswith('#')); \
bad = [n for n in ('lightning', 'hydra-core', 'omegaconf', 'torchmetrics') if m.version(n) != pins[n]]; \
assert torch.__version__.split('+')[0] == '${TORCH}', torch.__version__; \
assert not bad, bad; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

COPY conf ./conf
COPY bench ./bench
COPY *.py ./

VOLUME ["/data", "/app/outputs"]
CMD ["python", "train.py", "task=ptb", "trainer=gpu"]
