# escape=`
FROM scratch
COPY a `
 b /
