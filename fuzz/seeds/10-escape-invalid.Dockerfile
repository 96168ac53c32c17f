# escape=x
# escape=`
FROM a
