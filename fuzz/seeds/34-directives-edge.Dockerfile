#syntax = docker/dockerfile:1.7
#check= skip=all
#escape =\
# unknown=x
# escape=`
FROM a
