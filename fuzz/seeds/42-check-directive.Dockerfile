# check=skip=StageNameCasing,FromAsCasing;error=true
FROM a AS B
# check=error=maybe
