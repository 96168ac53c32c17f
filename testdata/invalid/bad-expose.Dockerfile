FROM alpine
EXPOSE 80/icmp
