# syntax=docker/dockerfile:1
FROM python:3
RUN python3 <<PY
print("héllo ✓")
PY
RUN <<"E O F"
x
E O F
RUN <<E\OF
x
EOF
