# escape=`
# syntax=docker/dockerfile:1
FROM windows
SHELL ["powershell", "-Command"]
RUN Write-Host `
  "hi `"there`""
ENV A="x`"y" B=c` d
COPY --chown=a` b src dst
