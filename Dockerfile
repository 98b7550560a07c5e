# esllm on CPU with the embedded default model.
#   docker build -t esllm . && docker run -p 7860:7860 -v esllm-cache:/root/.cache/esllm esllm
# (The cache volume keeps the one-time GGUF conversion between runs.)
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
# CPU build of torch first, so the pinned version does not pull a CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt
COPY . .
ENV GRADIO_ANALYTICS_ENABLED=False ESLLM_HOST=0.0.0.0
EXPOSE 7860
CMD ["python", "app.py"]
