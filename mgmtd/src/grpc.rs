//! The tonic `Mgmtd` service: one thin method per RPC that opens a tracing span with the request
//! id (and the node, chain or table it concerns), checks access through [`Cluster::admit`] and its
//! variants, and calls the [`Cluster`] method that plans, persists and applies the change. Errors
//! become gRPC statuses carrying the stable t3fs code.
use super::*;

/// The tonic service: a cheap handle on the shared [`Cluster`].
#[derive(Clone)]
pub struct MgmtdService {
    pub(crate) cluster: Arc<Cluster>,
}

impl MgmtdService {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }
}

impl MgmtdService {
    /// Runs a handler body in `span`, counting and timing it as `method`, mapping errors onto gRPC
    /// statuses (and logging them there).
    pub(crate) async fn handle<T>(
        &self,
        method: &'static str,
        span: tracing::Span,
        body: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let res = body.instrument(span.clone()).await;
        self.cluster.metrics.observe_rpc(method, started, res.as_ref().map_or_else(|e| e.code, |_| StatusCode::Ok));
        let _entered = span.enter();
        match res {
            Ok(rsp) => Ok(Response::new(rsp)),
            Err(e) => {
                if e.code == StatusCode::Internal || e.code == StatusCode::Io {
                    tracing::error!(error = %e, "request failed");
                } else {
                    tracing::debug!(error = %e, "request refused");
                }
                Err(e.to_tonic())
            }
        }
    }
}

#[tonic::async_trait]
impl Mgmtd for MgmtdService {
    async fn register_node(
        &self,
        request: Request<proto::RegisterNodeReq>,
    ) -> Result<Response<proto::RegisterNodeRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("register_node", req = %request_id(&req.header), node = req.node_id);
        self.handle("register_node", span, async {
            self.cluster.admit_node(&req.header, req.node_type)?;
            let routing_version = self.cluster.register(&req).await?;
            tracing::info!(node_type = req.node_type, grpc = %req.grpc_addr, bulk = %req.bulk_addr, "node registered");
            Ok(proto::RegisterNodeRsp { routing_version })
        })
        .await
    }

    async fn heartbeat(&self, request: Request<proto::HeartbeatReq>) -> Result<Response<proto::HeartbeatRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("heartbeat", req = %request_id(&req.header), node = req.node_id);
        self.handle("heartbeat", span, async {
            self.cluster.admit_node(&req.header, req.node_type)?;
            let (routing_version, config) = self.cluster.heartbeat(&req).await?;
            if let Some(c) = &config {
                tracing::debug!(version = c.version, applied = req.config_version, "pushing config");
            }
            let heartbeat_timeout_ms = u64::try_from(self.cluster.heartbeat_timeout.as_millis()).unwrap_or(u64::MAX);
            Ok(proto::HeartbeatRsp { routing_version, config, heartbeat_timeout_ms })
        })
        .await
    }

    async fn get_routing_info(
        &self,
        request: Request<proto::GetRoutingInfoReq>,
    ) -> Result<Response<proto::GetRoutingInfoRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("get_routing_info", req = %request_id(&req.header), known = req.known_version);
        self.handle("get_routing_info", span, async {
            self.cluster.admit_any(&req.header)?;
            Ok(proto::GetRoutingInfoRsp { info: self.cluster.routing_info(req.known_version).await? })
        })
        .await
    }

    async fn create_chain_table(
        &self,
        request: Request<proto::CreateChainTableReq>,
    ) -> Result<Response<proto::CreateChainTableRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("create_chain_table", req = %request_id(&req.header), table = req.table_id);
        self.handle("create_chain_table", span, async {
            self.cluster.admit(&req.header)?;
            let table = if req.new_version {
                self.cluster.new_table_version(req.table_id, &req.chains, &req.desc).await?
            } else if !req.chains.is_empty() {
                return Err(Error::invalid("chains are given only for a new table version (new_version)"));
            } else {
                let explicit: Vec<Vec<u64>> = req.explicit_chains.iter().map(|c| c.targets.clone()).collect();
                self.cluster.create_chain_table(req.table_id, req.replicas, &req.desc, &explicit).await?
            };
            Ok(proto::CreateChainTableRsp { table: Some(table) })
        })
        .await
    }

    async fn update_chain(
        &self,
        request: Request<proto::UpdateChainReq>,
    ) -> Result<Response<proto::UpdateChainRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!(
            "update_chain",
            req = %request_id(&req.header),
            chain = req.chain_id,
            add = req.add_target,
            remove = req.remove_target
        );
        self.handle("update_chain", span, async {
            self.cluster.admit(&req.header)?;
            let edit = ChainEdit::from_request(req.add_target, req.remove_target)?;
            Ok(proto::UpdateChainRsp { chain: Some(self.cluster.update_chain(req.chain_id, edit).await?) })
        })
        .await
    }

    async fn rotate_last_srv(
        &self,
        request: Request<proto::RotateLastSrvReq>,
    ) -> Result<Response<proto::RotateLastSrvRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("rotate_last_srv", req = %request_id(&req.header), chain = req.chain_id);
        self.handle("rotate_last_srv", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::RotateLastSrvRsp { chain: Some(self.cluster.rotate_lastsrv(req.chain_id).await?) })
        })
        .await
    }

    async fn add_user(&self, r: Request<proto::AddUserReq>) -> Result<Response<proto::AddUserRsp>, Status> {
        crate::accounts_service::add_user(self, r.into_inner()).await
    }

    async fn remove_user(&self, r: Request<proto::RemoveUserReq>) -> Result<Response<proto::RemoveUserRsp>, Status> {
        crate::accounts_service::remove_user(self, r.into_inner()).await
    }

    async fn set_user_token(
        &self,
        r: Request<proto::SetUserTokenReq>,
    ) -> Result<Response<proto::SetUserTokenRsp>, Status> {
        crate::accounts_service::set_user_token(self, r.into_inner()).await
    }

    async fn list_users(&self, r: Request<proto::ListUsersReq>) -> Result<Response<proto::ListUsersRsp>, Status> {
        crate::accounts_service::list_users(self, r.into_inner()).await
    }

    async fn get_user_table(
        &self,
        r: Request<proto::GetUserTableReq>,
    ) -> Result<Response<proto::GetUserTableRsp>, Status> {
        crate::accounts_service::get_user_table(self, r.into_inner()).await
    }

    async fn extend_client_session(
        &self,
        r: Request<proto::ExtendClientSessionReq>,
    ) -> Result<Response<proto::ExtendClientSessionRsp>, Status> {
        crate::accounts_service::extend_client_session(self, r.into_inner()).await
    }

    async fn list_client_sessions(
        &self,
        r: Request<proto::ListClientSessionsReq>,
    ) -> Result<Response<proto::ListClientSessionsRsp>, Status> {
        crate::accounts_service::list_client_sessions(self, r.into_inner()).await
    }

    async fn set_config(&self, request: Request<proto::SetConfigReq>) -> Result<Response<proto::SetConfigRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("set_config", req = %request_id(&req.header), node_type = req.node_type);
        self.handle("set_config", span, async {
            self.cluster.admit(&req.header)?;
            let config = self.cluster.set_config(req.node_type, &req.toml, req.expected_version).await?;
            tracing::info!(version = config.version, bytes = config.toml.len(), "config set");
            Ok(proto::SetConfigRsp { config: Some(config) })
        })
        .await
    }

    async fn get_config(&self, request: Request<proto::GetConfigReq>) -> Result<Response<proto::GetConfigRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::debug_span!("get_config", req = %request_id(&req.header), node_type = req.node_type);
        self.handle("get_config", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::GetConfigRsp { config: Some(self.cluster.get_config(req.node_type).await?) })
        })
        .await
    }

    async fn disable_node(
        &self,
        request: Request<proto::DisableNodeReq>,
    ) -> Result<Response<proto::DisableNodeRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("disable_node", req = %request_id(&req.header), node = req.node_id);
        self.handle("disable_node", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::DisableNodeRsp { node: Some(self.cluster.disable_node(req.node_id).await?) })
        })
        .await
    }

    async fn enable_node(
        &self,
        request: Request<proto::EnableNodeReq>,
    ) -> Result<Response<proto::EnableNodeRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("enable_node", req = %request_id(&req.header), node = req.node_id);
        self.handle("enable_node", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::EnableNodeRsp { node: Some(self.cluster.enable_node(req.node_id).await?) })
        })
        .await
    }

    async fn unregister_node(
        &self,
        request: Request<proto::UnregisterNodeReq>,
    ) -> Result<Response<proto::UnregisterNodeRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("unregister_node", req = %request_id(&req.header), node = req.node_id);
        self.handle("unregister_node", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::UnregisterNodeRsp { routing_version: self.cluster.unregister_node(req.node_id).await? })
        })
        .await
    }

    async fn set_preferred_order(
        &self,
        request: Request<proto::SetPreferredOrderReq>,
    ) -> Result<Response<proto::SetPreferredOrderRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("set_preferred_order", req = %request_id(&req.header), chain = req.chain_id);
        self.handle("set_preferred_order", span, async {
            self.cluster.admit(&req.header)?;
            let chain = self.cluster.set_preferred_order(req.chain_id, &req.target_ids).await?;
            Ok(proto::SetPreferredOrderRsp { chain: Some(chain) })
        })
        .await
    }

    async fn rotate_chain_head(
        &self,
        request: Request<proto::RotateChainHeadReq>,
    ) -> Result<Response<proto::RotateChainHeadRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("rotate_chain_head", req = %request_id(&req.header), chain = req.chain_id);
        self.handle("rotate_chain_head", span, async {
            self.cluster.admit(&req.header)?;
            Ok(proto::RotateChainHeadRsp { chain: Some(self.cluster.rotate_head(req.chain_id).await?) })
        })
        .await
    }

    async fn set_node_tags(
        &self,
        request: Request<proto::SetNodeTagsReq>,
    ) -> Result<Response<proto::SetNodeTagsRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("set_node_tags", req = %request_id(&req.header), node = req.node_id);
        self.handle("set_node_tags", span, async {
            self.cluster.admit(&req.header)?;
            let mode = proto::SetTagsMode::try_from(req.mode)
                .map_err(|_| Error::invalid(format!("unknown tags mode {}", req.mode)))?;
            Ok(proto::SetNodeTagsRsp { node: Some(self.cluster.set_node_tags(req.node_id, &req.tags, mode).await?) })
        })
        .await
    }

    async fn offline_target(
        &self,
        request: Request<proto::OfflineTargetReq>,
    ) -> Result<Response<proto::OfflineTargetRsp>, Status> {
        let req = request.into_inner();
        let span = tracing::info_span!("offline_target", req = %request_id(&req.header), target = req.target_id);
        self.handle("offline_target", span, async {
            self.cluster.admit(&req.header)?;
            let (target, chain) = self.cluster.offline_target(req.target_id, req.online).await?;
            Ok(proto::OfflineTargetRsp { target: Some(target), chain })
        })
        .await
    }
}
