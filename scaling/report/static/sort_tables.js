document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-asc')!=='1';
      t.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-asc');});
      th.setAttribute('data-asc',asc?'1':'0');
      function key(r){var c=r.cells[i],v=c.getAttribute('data-v');var x=parseFloat(v);return isNaN(x)?(v||c.textContent):x;}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
