# The nginx gateway of docs/nginx-gateway.md in a container: nginx's Debian image,
# conflux and its entrypoint from the image packaging/Dockerfile builds (tagged
# conflux), and this repository's gateway confdir. From the top of the repository:
#
#   docker build -f packaging/Dockerfile -t conflux .
#   docker build -f packaging/gateway.Dockerfile -t conflux-gateway .
#   docker run -p 8080:8080 -e CONFLUX_NODES=http://etcd:2379 conflux-gateway
#
# with /gateway/listen = 0.0.0.0:8080 in etcd. tests/gateway/container.rs runs this
# file's ENV, ENTRYPOINT and CMD without Docker (its paths moved under a temp dir)
# against a real nginx.
FROM nginx:stable-bookworm
COPY --from=conflux /usr/bin/conflux /usr/bin/conflux-entrypoint /usr/bin/
COPY conf.d/ /etc/conflux/conf.d/
COPY templates/ /etc/conflux/templates/
# The gateway's dests are relative to the confdir: out/ is nginx's prefix too (its pid
# file and temp paths), as the gateway's check_cmd and reload_cmd expect.
RUN mkdir -p /etc/conflux/out
# After the first render, conflux keeps following etcd beside nginx and reloads it.
ENV CONFLUX_ENTRYPOINT_WATCH=1
# A restarted container keeps its files: the pid file of the last run's nginx must not
# be taken for a running nginx by the first render's reload_cmd (a failed reload
# would stop the container, and the reload it owes would fail again at every start).
ENTRYPOINT ["sh", "-c", "rm -f /etc/conflux/out/nginx.pid && exec conflux-entrypoint \"$@\"", "conflux-entrypoint"]
CMD ["nginx", "-p", "/etc/conflux/out/", "-c", "/etc/conflux/out/nginx.conf", "-g", "daemon off;"]
