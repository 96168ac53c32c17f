# syntax=docker/dockerfile:1
# check=skip=JSONArgsRecommended;error=true
FROM a
CMD echo
