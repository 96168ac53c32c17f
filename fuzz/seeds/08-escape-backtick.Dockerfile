# escape=`
FROM mcr.microsoft.com/windows/servercore
RUN dir c:\ `
    /w `
    /b
COPY testfile.txt c:\
WORKDIR c:\windows\
RUN <<`EOF
x
EOF
