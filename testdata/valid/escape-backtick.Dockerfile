# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
WORKDIR c:\app
COPY src\ c:\app\
RUN powershell -Command `
    Write-Host "backtick continues the line"; `
    Get-ChildItem c:\app
ENV PATH="c:\app\bin;${PATH}"
