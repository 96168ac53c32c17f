# check=error=true
FROM alpine
CMD run forever
