# GPU image for rnnlab. Build:  docker build -t rnnlab .
# Run:  docker run --gpus all --shm-size 8g -v $PWD/data:/data -v $PWD/outputs:/app/outputs \
#         rnnlab python train.py task=ptb experiment=ptb_medium trainer=gpu
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /app
ENV RNNLAB_DATA_DIR=/data \
    RNNLAB_CACHE_DIR=/app/.cache \
    PYTHONUNBUFFERED=1

# Dependencies first (cached layer); torch comes from the base image and is left as it is.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir -e ".[plot]"

COPY conf ./conf
COPY bench ./bench
COPY *.py ./

VOLUME ["/data", "/app/outputs"]
CMD ["python", "train.py", "task=ptb", "trainer=gpu"]
