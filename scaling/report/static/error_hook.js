(function(){
  function record(msg){
    var el=document.documentElement;
    el.setAttribute('data-script-errors',(el.getAttribute('data-script-errors')||'')+msg+'\n');
    var b=document.getElementById('script-errors');
    if(b){b.style.display='block';b.textContent='Script error (a figure may be missing): '+el.getAttribute('data-script-errors');}
  }
  window.addEventListener('error',function(e){record((e.message||'error')+' at '+(e.filename||'?')+':'+(e.lineno||0));});
  window.addEventListener('unhandledrejection',function(e){record('unhandled rejection: '+String(e.reason));});
})();
