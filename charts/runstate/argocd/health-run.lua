-- Argo CD health of a runstate Run (resource.customizations.health.runstate.dev_Run).
-- Healthy only when the run completed and its hooks are done; Degraded when it failed,
-- crashed or was cancelled (its work was not done, and it will not be by itself);
-- Suspended while paused; Progressing otherwise, and until the operator has seen it.
local hs = {status = "Progressing", message = "Waiting for the runstate operator"}
local meta = obj.metadata or {}
local st = obj.status
if st == nil or st.state == nil or st.state.type == nil then
  return hs
end
if st.observedGeneration ~= nil and meta.generation ~= nil
    and st.observedGeneration < meta.generation then
  hs.message = "Waiting for the operator to observe generation " .. meta.generation
  return hs
end
local state = st.state
local text = state.name or state.type
if state.message ~= nil and state.message ~= "" then
  text = text .. ": " .. state.message
end
hs.message = text
local kind = state.type
if kind == "FAILED" or kind == "CRASHED" or kind == "CANCELLED" then
  hs.status = "Degraded"
elseif kind == "PAUSED" then
  hs.status = "Suspended"
elseif kind == "COMPLETED" then
  hs.status = "Healthy"
  for _, c in ipairs(st.conditions or {}) do
    if c.type == "Reconciling" and c.status == "True" then
      hs.status = "Progressing"
      hs.message = text .. " (" .. (c.message or "hooks running") .. ")"
    end
  end
end
return hs
